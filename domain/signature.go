package domain

// Signature records how a delivery was verified: the scheme
// ("standard-webhooks", "hmac-sha256" or "none") and the index of the
// source's secret that matched (-1 when unsigned). The secret itself is
// never recorded.
type Signature struct {
	Scheme string
	Secret int
}
