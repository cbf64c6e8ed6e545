package graphgen

import (
	"strings"
	"testing"
)

func TestShape(t *testing.T) {
	g := Generate(Params{N: 100000, Seed: 1})
	s := g.Stats()
	t.Logf("%+v", s)
	if s.Nodes != 100000 || s.Roots != 300 {
		t.Fatalf("nodes %d roots %d", s.Nodes, s.Roots)
	}
	if s.Depth < 20 || s.Depth > 40 {
		t.Errorf("depth %d, want 20-40", s.Depth)
	}
	if avg := float64(s.Edges) / float64(s.Nodes-s.Roots-s.FOD); avg < 5 || avg > 15 {
		t.Errorf("%.1f inputs per derivation, want 5-15", avg)
	}
	if s.MaxFanIn < 1000 || s.MedianFanIn > 20 {
		t.Errorf("fan-in max %d median %d: want a few with thousands, most with a handful", s.MaxFanIn, s.MedianFanIn)
	}
	if share := float64(s.FOD) / float64(s.Nodes); share < 0.02 || share > 0.1 {
		t.Errorf("FOD share %.3f", share)
	}
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			if g.Nodes[in].Layer >= n.Layer {
				t.Fatalf("%s depends on %s of layer %d", n.Name, g.Nodes[in].Name, g.Nodes[in].Layer)
			}
		}
	}
	again := Generate(Params{N: 100000, Seed: 1})
	if again.Stats() != s {
		t.Fatal("same seed, different graph")
	}
}

func TestWriteNix(t *testing.T) {
	g := Generate(Params{N: 50, Roots: 5, Layers: 5, Seed: 2, FODShare: 0.1})
	var b strings.Builder
	if err := g.WriteNix(&b, "s", func(string) string { return "h" }); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if strings.Count(text, " = mk ")+strings.Count(text, " = fod ") != 50 {
		t.Fatalf("not 50 derivations:\n%s", text)
	}
}
