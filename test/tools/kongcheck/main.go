// kongcheck validates Kong declarative configuration files offline, with the code decK itself
// uses for `deck file validate` (github.com/kong/go-database-reconciler): the files are read
// and checked against the module's embedded Kong JSON schema (unknown fields, wrong types),
// rendered into entities against an empty current state (dangling references, duplicate
// names), and loaded into Kong's in-memory state (conflicting entities).
//
// Usage: kongcheck FILE...   exit status 0 when the files are valid, 1 with the reason.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/blang/semver/v4"
	"github.com/kong/go-database-reconciler/pkg/dump"
	"github.com/kong/go-database-reconciler/pkg/file"
	"github.com/kong/go-database-reconciler/pkg/state"
)

// The Kong release the configuration targets (Kong Gateway 3.x).
var kongVersion = semver.MustParse("3.9.0")

func check(files []string) error {
	content, err := file.GetContentFromFiles(files, false)
	if err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	empty, err := state.NewKongState()
	if err != nil {
		return err
	}
	raw, err := file.Get(context.Background(), content,
		file.RenderConfig{CurrentState: empty, KongVersion: kongVersion},
		dump.Config{}, nil)
	if err != nil {
		return fmt.Errorf("rendering: %w", err)
	}
	if _, err := state.Get(raw); err != nil {
		return fmt.Errorf("building the state: %w", err)
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kongcheck FILE...")
		os.Exit(2)
	}
	if err := check(os.Args[1:]); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Printf("%d file(s) valid for Kong %s\n", len(os.Args)-1, kongVersion)
}
