package domain

import "hash/fnv"

// Partition is the partition of n that holds the events of task taskID:
// FNV-1a of the task id, modulo n. It never changes for a given id and n,
// so a task's events are applied in stream order by one worker.
func Partition(taskID string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(taskID))
	return int(h.Sum32() % uint32(n))
}
