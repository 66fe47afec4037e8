package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// value is a setting's flag.Value: it parses text into the field's type.
type value interface {
	String() string
	Set(string) error
	typeName() string
}

// reporting is a setting's flag: a value that does not parse is recorded
// as a problem naming the setting, and the field keeps what it had, so
// that Load reports every problem at once.
type reporting struct {
	value
	name     string
	problems *[]error
}

func (r *reporting) String() string {
	if r == nil || r.value == nil {
		return ""
	}
	return r.value.String()
}

func (r *reporting) Set(s string) error {
	if err := r.value.Set(s); err != nil {
		*r.problems = append(*r.problems, problem(r.name, "%v", err))
	}
	return nil
}

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) typeName() string   { return "string" }

type durationValue time.Duration

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 90s, 2m)", s)
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) typeName() string { return "duration" }

// numberValue is a whole number, stored in a field of type T.
type numberValue[T int | int64] struct{ p *T }

func (v numberValue[T]) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*v.p), 10)
}
func (v numberValue[T]) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || int64(T(n)) != n {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v.p = T(n)
	return nil
}
func (v numberValue[T]) typeName() string { return "int" }

// listValue is comma separated; blanks around items and empty items are
// dropped.
type listValue []string

func (v *listValue) String() string { return strings.Join(*v, ",") }
func (v *listValue) Set(s string) error {
	*v = nil
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*v = append(*v, item)
		}
	}
	return nil
}
func (v *listValue) typeName() string { return "list" }

type syncValue SyncPolicy

func (v *syncValue) String() string { return SyncPolicy(*v).String() }
func (v *syncValue) Set(s string) error {
	p, err := ParseSyncPolicy(s)
	if err == nil {
		*v = syncValue(p)
	}
	return err
}
func (v *syncValue) typeName() string { return "policy" }

// addrValue is an IP address and port; empty is the zero value.
type addrValue netip.AddrPort

func (v *addrValue) String() string {
	if !netip.AddrPort(*v).IsValid() {
		return ""
	}
	return netip.AddrPort(*v).String()
}
func (v *addrValue) Set(s string) error {
	if s == "" {
		*v = addrValue{}
		return nil
	}
	a, err := netip.ParseAddrPort(s)
	if err != nil || a.Port() == 0 {
		return fmt.Errorf("%q: want an IP address and port such as 127.0.0.1:4223, or empty", s)
	}
	*v = addrValue(a)
	return nil
}
func (v *addrValue) typeName() string { return "addr" }
