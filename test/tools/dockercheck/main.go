// dockercheck checks the files a container engine reads, with the engine's own code:
//
//	dockercheck compose FILE PROFILE[,PROFILE...] [DIR]   ("" for no profile)
//	dockercheck dockerfile FILE
//
// compose loads FILE (its relative paths from DIR, by default FILE's folder) with github.com/compose-spec/compose-go/v2, the loader `docker compose`
// itself runs: the Compose Specification's JSON schema, interpolation (a required variable
// that is unset is an error), env_file and path resolution, profiles, and the consistency
// checks (an unknown service in depends_on or network_mode, an undefined network, volume or
// config). With the project valid it prints the resolved model as JSON, so that a test can
// check what the file means as well as its form.
//
// dockerfile parses FILE with BuildKit's Dockerfile frontend (github.com/moby/buildkit), the
// parser and instruction checks `docker build` runs, with the build checks of
// `docker build --check` (its linter): a parse error, an unknown instruction or a lint
// warning fails it.
//
// Exit status 0 when the file is valid; 1 with the reasons on standard error.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func compose(file string, profiles []string, dir string) error {
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(dir),
		cli.WithOsEnv,
		cli.WithName("app"),
		cli.WithProfiles(profiles),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
		cli.WithNormalization(true))
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	model, err := json.MarshalIndent(project, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(model))
	return nil
}

func dockerfile(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	ast, err := parser.Parse(f)
	if err != nil {
		return err
	}
	var warnings []string
	for _, w := range ast.Warnings {
		warnings = append(warnings, fmt.Sprintf("line %d: %s", w.Location.Start.Line, w.Short))
	}
	lint := linter.New(&linter.Config{
		Warn: func(rule, description, url, msg string, location []parser.Range) {
			line := 0
			if len(location) > 0 {
				line = location[0].Start.Line
			}
			warnings = append(warnings, fmt.Sprintf("line %d: %s: %s (%s)", line, rule, msg, url))
		},
	})
	if _, _, err := instructions.Parse(ast.AST, lint); err != nil {
		return err
	}
	if len(warnings) > 0 {
		return fmt.Errorf("%s", strings.Join(warnings, "\n"))
	}
	return nil
}

func main() {
	var err error
	switch {
	case (len(os.Args) == 4 || len(os.Args) == 5) && os.Args[1] == "compose":
		var profiles []string
		if os.Args[3] != "" {
			profiles = strings.Split(os.Args[3], ",")
		}
		dir := filepath.Dir(os.Args[2])
		if len(os.Args) == 5 {
			dir = os.Args[4]
		}
		err = compose(os.Args[2], profiles, dir)
	case len(os.Args) == 3 && os.Args[1] == "dockerfile":
		err = dockerfile(os.Args[2])
	default:
		fmt.Fprintln(os.Stderr, "usage: dockercheck compose FILE PROFILE[,PROFILE...] [DIR] | dockercheck dockerfile FILE")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dockercheck: %s: %v\n", os.Args[2], err)
		os.Exit(1)
	}
}
