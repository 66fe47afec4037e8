package eventlog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A server without JetStream is refused at once with ErrNoJetStream, not
// retried as a cluster still electing its leader would be.
func TestEnsureStreamOnAServerWithoutJetStream(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = EnsureStream(context.Background(), js, StreamConfig{Name: "S", SubjectPrefix: "s"})
	if !errors.Is(err, ErrNoJetStream) || unsettled(err) {
		t.Fatalf("EnsureStream without JetStream: %v, want ErrNoJetStream, not retried", err)
	}
}

// What retrying can change and what it cannot.
func TestUnsettled(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{nats.ErrTimeout, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{withoutJetStream(nats.ErrNoResponders), false},
		{jetstream.ErrJetStreamNotEnabled, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}, false},
		{&PartitionsChangedError{Stream: "S", Stored: 1, Configured: 4}, false},
	} {
		if got := unsettled(c.err); got != c.want {
			t.Errorf("unsettled(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
