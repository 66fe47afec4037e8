package eventlog

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// ErrUnreachable is returned by Connect when no NATS server answers.
var ErrUnreachable = errors.New("cannot reach NATS")

// Connect dials url (or, with ns set, the in-process server ns, as the
// user of creds) and keeps reconnecting forever, logging each disconnect
// and reconnect once.
func Connect(urls string, ns *server.Server, creds *Credentials, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("taskledger"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil on a deliberate close
				log.Warn().Err(err).Msg("nats disconnected; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error().Err(err).Msg("nats async error")
		}),
	}
	if ns != nil {
		opts = append(opts, nats.InProcessServer(ns))
	}
	if creds != nil {
		opts = append(opts, nats.UserInfo(creds.User, creds.Password))
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w at %q: %w", ErrUnreachable, redacted(urls), err)
	}
	return nc, nil
}

// redacted is urls with their passwords hidden, for messages.
func redacted(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
