package evaluator

import (
	"context"

	"github.com/ekaci/ekaci/services/evaluator/internal/closure"
)

// WalkClosure reads the closure of roots from their .drv files as the
// evaluator does, and says how many derivations and edges it holds (for
// benchmarks).
func WalkClosure(ctx context.Context, roots []string) (drvs, edges int, err error) {
	ds, err := closure.Walk(ctx, roots)
	if err != nil {
		return 0, 0, err
	}
	for _, d := range ds {
		edges += len(d.InputDrvs)
	}
	return len(ds), edges, nil
}
