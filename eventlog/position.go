package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// apiTimeout bounds a JetStream API request, as the jetstream package's
// default does.
const apiTimeout = 5 * time.Second

// Position reads where the stream and its partitions end.
type Position struct {
	js  jetstream.JetStream
	cfg StreamConfig
}

// NewPosition reads positions of the stream described by cfg.
func NewPosition(js jetstream.JetStream, cfg StreamConfig) Position {
	return Position{js: js, cfg: cfg}
}

// LastSeq is the stream's last sequence.
func (p Position) LastSeq(ctx context.Context) (uint64, error) {
	s, err := p.js.Stream(ctx, p.cfg.Name)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", p.cfg.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", p.cfg.Name, err)
	}
	return info.State.LastSeq, nil
}

// PartitionLastSeq is the sequence of partition part's last event, 0 when it
// has none.
func (p Position) PartitionLastSeq(ctx context.Context, part int) (uint64, error) {
	var last uint64
	for _, subject := range p.cfg.PartitionSubjects(part) {
		seq, err := p.lastSeqOn(ctx, subject)
		if err != nil {
			return 0, err
		}
		last = max(last, seq)
	}
	return last, nil
}

// lastSeqOn asks the stream for its last message on subject, wildcards
// allowed (which the direct get API does not take in its subject).
func (p Position) lastSeqOn(ctx context.Context, subject string) (uint64, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	// A request the stream leader took just before it died is never
	// answered: bound the wait as JetStream's own API calls are.
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	msg, err := p.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+p.cfg.Name, req)
	if err != nil {
		return 0, fmt.Errorf("read last event on %s: %w", subject, err)
	}
	var resp struct {
		Message struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("read last event on %s: %w", subject, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return 0, nil
		}
		return 0, fmt.Errorf("read last event on %s: %w", subject, resp.Error)
	}
	return resp.Message.Seq, nil
}

// FirstAfter is when the stream stored its first event after seq, on any
// of its subjects; ok is false when it holds none yet.
func (p Position) FirstAfter(ctx context.Context, seq uint64) (stored time.Time, ok bool, err error) {
	s, err := p.js.Stream(ctx, p.cfg.Name)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read stream %s: %w", p.cfg.Name, err)
	}
	m, err := s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(p.cfg.AllSubjects()))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the event after %d: %w", seq, err)
	}
	return m.Time, true, nil
}
