package ingest

import (
	"errors"
	"net/http"

	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/internal/sources"
)

// unauthorized answers a delivery whose signature did not verify: 401 with
// signature_missing, signature_invalid or signature_expired.
func unauthorized(w http.ResponseWriter, err error) {
	code := httpjson.CodeSignatureInvalid
	switch {
	case errors.Is(err, sources.ErrSignatureMissing):
		code = httpjson.CodeSignatureMissing
	case errors.Is(err, sources.ErrSignatureExpired):
		code = httpjson.CodeSignatureExpired
	}
	httpjson.Error(w, http.StatusUnauthorized, code, err.Error())
}
