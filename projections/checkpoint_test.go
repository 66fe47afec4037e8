package projections_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

func TestPartitionCheckpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.NewMigratedPool(t)
	const name = "completions_all"
	inTx := func(f func(pgx.Tx) error) error { return pgx.BeginFunc(ctx, pool, f) }

	// A projection that has applied nothing is split freely.
	if err := inTx(func(tx pgx.Tx) error { return projections.EnsurePartitions(ctx, tx, name, 4) }); err != nil {
		t.Fatal(err)
	}
	err := inTx(func(tx pgx.Tx) error {
		if err := projections.SetPartition(ctx, tx, name, 2, 9); err != nil {
			return err
		}
		return projections.SetPartition(ctx, tx, name, 1, 5)
	})
	if err != nil {
		t.Fatal(err)
	}
	cps, err := projections.Partitions(ctx, pool, name)
	if err != nil || len(cps) != 4 || cps[1].LastSeq != 5 || cps[2].LastSeq != 9 || cps[3].Partition != 3 {
		t.Fatalf("partitions %+v, %v", cps, err)
	}
	if cp, err := projections.Checkpoint(ctx, pool, name); cp != 0 || err != nil {
		t.Errorf("Checkpoint = %d, %v; want the lowest partition's, 0", cp, err)
	}
	err = inTx(func(tx pgx.Tx) error {
		furthest, err := projections.LockCheckpoint(ctx, tx, name)
		if furthest != 9 {
			t.Errorf("LockCheckpoint = %d, want the furthest partition's, 9", furthest)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = inTx(func(tx pgx.Tx) error {
		_, err := projections.LockPartition(ctx, tx, name, 4)
		return err
	})
	if !errors.Is(err, projections.ErrPartitionsChanged) {
		t.Errorf("lock a partition that does not exist: %v, want ErrPartitionsChanged", err)
	}

	// Once events are applied, only a rebuild may change the count.
	for _, n := range []int{1, 8} {
		err := inTx(func(tx pgx.Tx) error { return projections.EnsurePartitions(ctx, tx, name, n) })
		if !errors.Is(err, projections.ErrPartitionsChanged) {
			t.Errorf("EnsurePartitions(%d) over 4 applied partitions: %v, want ErrPartitionsChanged", n, err)
		}
	}
	if err := inTx(func(tx pgx.Tx) error { return projections.EnsurePartitions(ctx, tx, name, 4) }); err != nil {
		t.Errorf("EnsurePartitions with the same count: %v", err)
	}
}
