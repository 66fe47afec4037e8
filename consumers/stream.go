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

// verifyStream checks that the database behind db follows the stream named
// name as js reaches it now: a consumer or rebuild must never apply one
// stream's events on top of another's checkpoints.
func verifyStream(ctx context.Context, js jetstream.JetStream, name string, db projections.DB) error {
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", name, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", name, err)
	}
	return projections.VerifyStream(ctx, db, StreamIdentity(info), info.State.LastSeq)
}
