package domain

import (
	"errors"
	"fmt"
)

// The codes of a ValidationError: why a JSON body is not a valid event.
// The HTTP API answers them as they are (see httpjson's codes).
const (
	CodeMissingField = "missing_field"
	CodeInvalidField = "invalid_field"
	CodeInvalidKey   = "invalid_idempotency_key"
)

// ErrInvalidJSON is wrapped by errors for bodies that are not JSON at all.
var ErrInvalidJSON = errors.New("body is not valid JSON")

// ValidationError reports a webhook body that is JSON but not a valid event.
type ValidationError struct {
	Code    string // one of the Code* constants
	Field   string // the offending field, if any
	Message string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Message)
}

func missing(field string) error {
	return &ValidationError{Code: CodeMissingField, Field: field, Message: "is required"}
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Code: CodeInvalidField, Field: field, Message: fmt.Sprintf(format, args...)}
}
