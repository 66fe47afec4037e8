package domain

import (
	"fmt"
	"testing"
)

func TestPartitionIsStableAndSpreadsTasks(t *testing.T) {
	t.Parallel()
	if got := Partition("anything", 1); got != 0 {
		t.Errorf("Partition with n=1 = %d, want 0", got)
	}
	// Fixed values: a change of the function would move tasks between
	// partitions of existing streams.
	for task, want := range map[string]int{"abc123": 1, "t-2": 0, "t-3": 3, "task-9": 2} {
		if got := Partition(task, 4); got != want {
			t.Errorf("Partition(%q, 4) = %d, want %d", task, got, want)
		}
	}
	counts := make([]int, 4)
	for i := range 4000 {
		p := Partition(fmt.Sprintf("task-%d", i), 4)
		if p != Partition(fmt.Sprintf("task-%d", i), 4) {
			t.Fatal("Partition is not deterministic")
		}
		counts[p]++
	}
	for p, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("partition %d got %d of 4000 tasks, want about 1000: %v", p, n, counts)
		}
	}
}
