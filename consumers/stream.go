package consumers

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/projections"
)

// StreamIdentity is the incarnation of the stream described by info: its
// name and creation time.
func StreamIdentity(info *jetstream.StreamInfo) projections.StreamIdentity {
	return projections.StreamIdentity{Name: info.Config.Name, Created: info.Created}
}

// streamGuard keeps a consumer on the stream incarnation its database
// follows. A stream deleted and created again under a running consumer
// would otherwise go on delivering from the checkpoint: the new
// incarnation's events at positions that meant other events.
type streamGuard struct {
	stream   jetstream.Stream
	identity projections.StreamIdentity
}

// guardStream checks that the database behind db follows the stream named
// name as js reaches it now, and returns a guard for it.
func guardStream(ctx context.Context, js jetstream.JetStream, name string, db projections.DB) (*streamGuard, error) {
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", name, err)
	}
	var identity projections.StreamIdentity
	if err := projections.VerifyStream(ctx, db, func(ctx context.Context) (projections.StreamIdentity, uint64, error) {
		info, err := stream.Info(ctx)
		if err != nil {
			return identity, 0, fmt.Errorf("read stream %s: %w", name, err)
		}
		identity = StreamIdentity(info)
		return identity, info.State.LastSeq, nil
	}); err != nil {
		return nil, err
	}
	return &streamGuard{stream: stream, identity: identity}, nil
}

// check fails if the stream is no longer the incarnation guarded: call it
// before applying what was read.
func (g *streamGuard) check(ctx context.Context) error {
	info, err := g.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", g.identity.Name, err)
	}
	if now := StreamIdentity(info); now != g.identity {
		return fmt.Errorf("stream %s was replaced by %s under the consumer", g.identity, now)
	}
	return nil
}
