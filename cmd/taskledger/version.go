package main

import (
	"fmt"
	"runtime/debug"
)

// version is the module version, and the commit it was built from when
// the build recorded one.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "taskledger (unknown version)"
	}
	v := "taskledger " + info.Main.Version
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v += fmt.Sprintf(" commit %.12s", rev)
		if t := settings["vcs.time"]; t != "" {
			v += " " + t
		}
		if settings["vcs.modified"] == "true" {
			v += " (modified)"
		}
	}
	return v + " " + info.GoVersion
}
