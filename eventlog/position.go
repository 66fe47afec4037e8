package eventlog

import (
	"context"
	"encoding/json"
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
	m, _, err := p.getMsg(ctx, map[string]any{"last_by_subj": subject})
	if err != nil {
		return 0, fmt.Errorf("read last event on %s: %w", subject, err)
	}
	return m.Seq, nil
}

// FirstAfter is when the stream stored its first event after seq, on any
// of its subjects; ok is false when it holds none yet.
func (p Position) FirstAfter(ctx context.Context, seq uint64) (stored time.Time, ok bool, err error) {
	m, ok, err := p.getMsg(ctx, map[string]any{"seq": seq + 1, "next_by_subj": p.cfg.AllSubjects()})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the event after %d: %w", seq, err)
	}
	return m.Time, ok, nil
}

// storedMsg is what getMsg reads of a stored message.
type storedMsg struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// getMsg asks the stream for the message req names (the JetStream API's
// message get request); found is false when there is none.
func (p Position) getMsg(ctx context.Context, req map[string]any) (m storedMsg, found bool, err error) {
	body, _ := json.Marshal(req)
	// A request the stream leader took just before it died is never
	// answered: bound the wait as JetStream's own API calls are.
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	msg, err := p.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+p.cfg.Name, body)
	if err != nil {
		return storedMsg{}, false, err
	}
	var resp struct {
		Message storedMsg           `json:"message"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return storedMsg{}, false, err
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return storedMsg{}, false, nil
		}
		return storedMsg{}, false, resp.Error
	}
	return resp.Message, true, nil
}
