package consumers

import (
	"time"

	"github.com/rs/zerolog"
)

// outage tracks consecutive failures so that an outage is logged once when
// it starts and once when it ends, with exponential backoff in between.
type outage struct {
	attempts int
	since    time.Time
}

func (o *outage) failed(log zerolog.Logger, err error) {
	if o.attempts == 0 {
		o.since = time.Now()
		log.Warn().Err(err).Msg("projection paused; retrying with backoff until it recovers")
	} else {
		log.Debug().Err(err).Int("attempt", o.attempts+1).Msg("still failing")
	}
	o.attempts++
}

func (o *outage) recovered(log zerolog.Logger) {
	if o.attempts > 0 {
		log.Info().Int("attempts", o.attempts).Dur("after_ms", time.Since(o.since)).Msg("projection recovered")
		o.attempts = 0
	}
}

// backoff grows from 100ms to at most 5s.
func (o *outage) backoff() time.Duration {
	d := 100 * time.Millisecond << min(o.attempts, 6)
	return min(d, 5*time.Second)
}
