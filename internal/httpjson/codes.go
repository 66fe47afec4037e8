package httpjson

import "github.com/taskledger/taskledger/domain"

// The codes of the HTTP API's error bodies: stable, machine-readable
// reasons, listed here and nowhere else.
const (
	// A webhook that can never be stored.
	CodeInvalidJSON      = "invalid_json"
	CodeMissingField     = domain.CodeMissingField // the event lacks a required field
	CodeInvalidField     = domain.CodeInvalidField // a field has a value no event can have
	CodeInvalidKey       = domain.CodeInvalidKey   // an idempotency key that is too long or not printable
	CodeKeyReused        = "idempotency_key_reused"
	CodeUnknownSource    = "unknown_source"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeBodyTooLarge     = "body_too_large"
	CodeHeaderTooLarge   = "header_too_large"
	CodeSignatureMissing = "signature_missing"
	CodeSignatureInvalid = "signature_invalid"
	CodeSignatureExpired = "signature_expired"
	CodeNotIngesting     = "not_ingesting" // a replica whose role is project

	// A webhook to send again later.
	CodeStreamUnavailable = "stream_unavailable"
	CodeTooManyRequests   = "too_many_requests" // over the in-flight budget

	// Queries and operations.
	CodeInvalidParameter   = "invalid_parameter"
	CodeTaskNotFound       = "task_not_found"
	CodeProjectionNotFound = "projection_not_found"
	CodeRebuildRunning     = "rebuild_running"
	CodeStreamMismatch     = "stream_mismatch" // the database follows another stream
	CodeDeadLetterNotFound = "dead_letter_not_found"
	CodeStillFailing       = "still_failing"
	CodeAdminDisabled      = "admin_disabled"
	CodeUnauthorized       = "unauthorized"
	CodeInternal           = "internal"

	// The router's own answers.
	CodeNotFound         = "not_found"          // no endpoint at the path
	CodeMethodNotAllowed = "method_not_allowed" // the path takes other methods
)
