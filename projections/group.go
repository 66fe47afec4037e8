package projections

// Group is a set of projections applied together: one reader of the
// stream per partition, and one transaction per batch that applies every
// stage in Stages order and moves each stage's checkpoint. Reading and
// decoding an event once for all of them, and committing once, is what
// makes the projections cheap beside ingest.
type Group struct {
	Name       string       // names its consumers' workers and sessions
	Stages     []Projection // applied in this order: the key stage first when it is in the group
	Partitions int          // how many partitions the group's stages are split into
}

// groupName names the group of every projection but the key stage when
// partitioned, and of all of them when not.
const groupName = "projections"

// Groups lists the groups that apply every projection split into
// partitions parts. With one partition, one group applies them all, the key
// stage first, so a policy sees in the same transaction what the key stage
// decided. With more, the key stage, which is never split, is a group of
// its own, and the policies and the timeline wait for it (WaitsForKeys).
func Groups(partitions int) []Group {
	if partitions <= 1 {
		return []Group{{Name: groupName, Stages: Every, Partitions: 1}}
	}
	var rest []Projection
	for _, p := range Every {
		if !p.Keys {
			rest = append(rest, p)
		}
	}
	return []Group{
		{Name: EventKeys.Name, Stages: []Projection{EventKeys}, Partitions: 1},
		{Name: groupName, Stages: rest, Partitions: partitions},
	}
}

// WaitsForKeys reports whether g's batches must wait for the key stage,
// applied elsewhere: a stage waits for it (Projection.WaitsForKeys), and
// the key stage is not one of g's.
func (g Group) WaitsForKeys() bool {
	waits := false
	for _, p := range g.Stages {
		if p.Keys {
			return false
		}
		waits = waits || p.WaitsForKeys()
	}
	return waits
}
