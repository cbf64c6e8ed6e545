package pbjson_test

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/pbjson"
)

// agree checks the property the fast decoder rests on: when it accepts an
// input, protojson accepts it too and reads the same message. (When it
// refuses, Unmarshal asks protojson, so refusing is always safe.)
func agree(t *testing.T, data []byte, newMsg func() proto.Message) bool {
	t.Helper()
	fast := newMsg()
	if !pbjson.DecodeFast(data, fast) {
		return false
	}
	slow := newMsg()
	if err := protoUnmarshal.Unmarshal(data, slow); err != nil {
		t.Fatalf("fast path accepted %q, protojson refuses it: %v", data, err)
	}
	if !proto.Equal(fast, slow) {
		t.Fatalf("read %q\nfast      %v\nprotojson %v", data, fast, slow)
	}
	// Unmarshal, fallback included, reads what protojson reads.
	got := newMsg()
	if err := pbjson.Unmarshal(data, got); err != nil || !proto.Equal(got, slow) {
		t.Fatalf("Unmarshal(%q) = %v, %v", data, got, err)
	}
	return true
}

// seeds are inputs in the shapes ekaci writes, with the JSON protojson
// accepts around them.
var seeds = []string{
	`{"id":"buildable-drv-1-1","occurred_at":"2026-12-01T20:00:00.123456Z","drv_buildable":{"drv_path":"/nix/store/a-x.drv","system":"x86_64-linux","attempt":1}}`,
	`{"id":"e","occurredAt":"2026-12-01T20:00:00Z","causationId":"c","drvBuildFailed":{"attempt":2,"exitCode":-100,"logTail":"\u001b[31merror\u001b[0m\n\"x\"","durationMs":"1234"}}`,
	`{"id":"j","jobset_concluded":{"change_id":"c","conclusion":"CONCLUSION_FAILURE","counts":{"failed":3,"succeeded":0},"results":[{"attr":"a","state":"Failed","difference":"DIFFERENCE_NEW","duration_ms":"5"}],"results_omitted":2}}`,
	`{"id":"x","jobset_created":{"args":{"b":"2","a":"1"},"allow_eval_failures":true}}`,
	`{"id":"x","change_config_read":{"jobs":["a","b",""],"configured":false},"unknown":{"deep":[1,2.5e3,-0.1,true,null,"s\u00e9"]}}`,
	` { "id" : "spaces" , "drv_build_succeeded" : { } } `,
	`{"id":"n","drv_interrupted":{"kind":4,"attempt":1}}`,
	`{"drv_id":"d","last_seq":"18446744073709551615","class":"BUILD_CLASS_FOD","required_system_features":["kvm"]}`,
	`{"drv_id":"d","started_seq":42,"outcome":"BUILD_OUTCOME_SUCCEEDED","interruption":"INTERRUPT_KIND_TIMEOUT","exit_code":-2147483648}`,
	`{}`,
}

// pieces are what a mutation splices in: tokens that are right somewhere.
var pieces = []string{
	`null`, `""`, `"x"`, `0`, `-0`, `01`, `1.0`, `1e2`, `-1`, `4294967296`, `"1"`, `" 1"`, `true`, `{}`, `[]`, `,`, `:`, `"`,
	`\`, `\u0000`, `\ud800`, `\ud83d\ude00`, "\xff", `"2026-13-01T00:00:00Z"`, `"2026-02-30T00:00:00Z"`, `"0000-01-01T00:00:00Z"`,
	`"2026-12-01T00:00:00+01:00"`, `"2026-12-01T00:00:00.1234567890Z"`, `"CONCLUSION_SUCCESS"`, `"NOPE"`, `"id"`, `"drv_buildable"`,
	`"drvBuildable"`, `"change_requested":{}`, `"[x.y]"`, " ", "\t", "\n",
}

func mutate(r *rand.Rand, b []byte) []byte {
	out := append([]byte(nil), b...)
	for range 1 + r.IntN(3) {
		if len(out) == 0 {
			out = append(out, pieces[r.IntN(len(pieces))]...)
			continue
		}
		i := r.IntN(len(out))
		j := min(len(out), i+r.IntN(8))
		switch r.IntN(4) {
		case 0: // delete
			out = append(out[:i], out[j:]...)
		case 1: // insert a piece
			out = append(out[:i], append([]byte(pieces[r.IntN(len(pieces))]), out[i:]...)...)
		case 2: // replace with a piece
			out = append(out[:i], append([]byte(pieces[r.IntN(len(pieces))]), out[j:]...)...)
		default: // duplicate a span: repeated fields and keys
			out = append(out[:j], append(append([]byte(nil), out[i:j]...), out[j:]...)...)
		}
	}
	return out
}

func TestMutatedInputsAgreeWithProtojson(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	types := []func() proto.Message{
		func() proto.Message { return &eventsv1.Event{} },
		func() proto.Message { return &workv1.BuildRequest{} },
		func() proto.Message { return &workv1.BuildReport{} },
	}
	accepted, refused := 0, 0
	for _, s := range seeds {
		for _, newMsg := range types {
			if !agree(t, []byte(s), newMsg) && newMsg().ProtoReflect().Descriptor().Name() == "Event" && s != seeds[7] && s != seeds[8] {
				t.Errorf("fast path refused seed %s", s)
			}
		}
	}
	for range 60000 {
		data := mutate(r, []byte(seeds[r.IntN(len(seeds))]))
		if agree(t, data, types[r.IntN(len(types))]) {
			accepted++
		} else {
			refused++
		}
	}
	// Both sides of the property must be exercised for it to mean anything.
	if accepted < 1000 || refused < 1000 {
		t.Fatalf("accepted %d, refused %d mutated inputs", accepted, refused)
	}
	t.Logf("accepted %d, refused %d mutated inputs", accepted, refused)
}

func FuzzUnmarshalAgreesWithProtojson(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		agree(t, data, func() proto.Message { return &eventsv1.Event{} })
		agree(t, data, func() proto.Message { return &workv1.BuildReport{} })
	})
}
