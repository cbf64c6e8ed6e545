package closure

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/nixtest"
)

// layered is a Nix file of layers × width trivial derivations, each
// depending on up to fanIn derivations of the layer below.
func layered(layers, width, fanIn int, salt string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "let mk = name: inputs: derivation { inherit name inputs; salt = %q; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo > $out\" ]; };\nin rec {\n", salt)
	for l := 0; l < layers; l++ {
		for w := 0; w < width; w++ {
			var ins []string
			if l > 0 {
				for k := 0; k < fanIn; k++ {
					ins = append(ins, fmt.Sprintf("d%d_%d", l-1, (w*7+k*13)%width))
				}
			}
			fmt.Fprintf(&b, "  d%d_%d = mk \"d%d-%d\" [ %s ];\n", l, w, l, w, strings.Join(ins, " "))
		}
	}
	b.WriteString("  top = [")
	for w := 0; w < width; w++ {
		fmt.Fprintf(&b, " d%d_%d", layers-1, w)
	}
	b.WriteString(" ];\n}\n")
	return b.String()
}

// BenchmarkWalk reads a 2,000-derivation closure (20 layers of 100, 8
// inputs each) from .drv files.
func BenchmarkWalk(b *testing.B) {
	nixtest.Require(b)
	const layers, width = 20, 100
	var attrs []string
	for w := 0; w < width; w++ {
		attrs = append(attrs, fmt.Sprintf("d%d_%d", layers-1, w))
	}
	drvs := instantiate(b, layered(layers, width, 8, fmt.Sprint(time.Now().UnixNano())), attrs...)
	var roots []string
	for _, d := range drvs {
		roots = append(roots, d)
	}
	b.ResetTimer()
	var n, edges int
	for range b.N {
		got, err := Walk(context.Background(), roots)
		if err != nil {
			b.Fatal(err)
		}
		n = len(got)
		edges = 0
		for _, d := range got {
			edges += len(d.InputDrvs)
		}
	}
	if n != layers*width {
		b.Fatalf("walked %d derivations, want %d", n, layers*width)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "drv/s")
	b.ReportMetric(float64(edges), "edges")
}
