package pbjson_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/pbjson"
)

var (
	protoMarshal   = protojson.MarshalOptions{UseProtoNames: true}
	protoUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// messages is one of every message type the generator wrote.
func messages(t testing.TB) []proto.Message {
	var out []proto.Message
	for _, fd := range []protoreflect.FileDescriptor{eventsv1.File_ekaci_events_v1_events_proto, workv1.File_ekaci_work_v1_work_proto} {
		for i := 0; i < fd.Messages().Len(); i++ {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(fd.Messages().Get(i).FullName())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, mt.New().Interface())
		}
	}
	if len(out) < 29 {
		t.Fatalf("found %d message types", len(out))
	}
	return out
}

// strings holds what payloads carry and what makes encoders differ.
var strings = []string{
	"", "a", "drv-0123abcd", "/nix/store/abc-hello.drv", "x86_64-linux",
	"ünïcödé €", "𝄞 astral", "quote \" and \\ backslash", "line\nbreak\ttab\r",
	"\x00\x01\x1f\x7f control", "</script>&<>", "\u2028\u2029", "\ufeffbom", "bad \xff utf8", "\xc3",
}

func randString(r *rand.Rand) string {
	if r.IntN(4) == 0 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	return strings[r.IntN(len(strings))]
}

// fill sets a random selection of m's fields to random values.
func fill(r *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	oneofs := map[protoreflect.FullName]bool{}
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if r.IntN(3) == 0 {
			continue
		}
		if od := fd.ContainingOneof(); od != nil {
			if oneofs[od.FullName()] || r.IntN(4) != 0 {
				continue
			}
			oneofs[od.FullName()] = true
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range r.IntN(4) {
				mp.Set(protoreflect.ValueOfString(randString(r)).MapKey(), scalar(r, fd.MapValue(), m, depth))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range r.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					fill(r, e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(scalar(r, fd, m, depth))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth > 3 {
				continue
			}
			v := m.NewField(fd)
			if fd.Message().FullName() == "google.protobuf.Timestamp" {
				ts := randTimestamp(r)
				v = protoreflect.ValueOfMessage(ts.ProtoReflect())
			} else {
				fill(r, v.Message(), depth+1)
			}
			m.Set(fd, v)
		default:
			m.Set(fd, scalar(r, fd, m, depth))
		}
	}
}

func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor, m protoreflect.Message, depth int) protoreflect.Value {
	ints := []int64{0, 1, -1, 7, 100, 1 << 31, -1 << 31, 1<<31 - 1, 1<<32 - 1, math.MaxInt64, math.MinInt64}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(randString(r))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(ints[r.IntN(len(ints))]))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(ints[r.IntN(len(ints))]))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(ints[r.IntN(len(ints))] * int64(r.IntN(3)+1))
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(uint64(ints[r.IntN(len(ints))]) * uint64(r.IntN(3)+1))
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if r.IntN(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.IntN(1000) - 500)) // unknown: written as a number
		}
		return protoreflect.ValueOfEnum(vals.Get(r.IntN(vals.Len())).Number())
	case protoreflect.MessageKind:
		v := m.NewField(fd)
		if fd.IsMap() {
			v = protoreflect.ValueOfMessage(m.NewField(fd).Map().NewValue().Message())
		}
		fill(r, v.Message(), depth+1)
		return v
	}
	panic(fmt.Sprintf("kind %s", fd.Kind()))
}

func randTimestamp(r *rand.Rand) *timestamppb.Timestamp {
	secs := []int64{0, 1, 1764600000, -1, -62135596800, 253402300799, -62135596801, 253402300800, r.Int64N(253402300799)}
	nanos := []int32{0, 1, 999999999, 1000000000, -1, 120000000, 123456000, 123456789, 500}
	return &timestamppb.Timestamp{Seconds: secs[r.IntN(len(secs))], Nanos: nanos[r.IntN(len(nanos))]}
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("protojson wrote invalid JSON %q: %v", b, err)
	}
	return buf.Bytes()
}

// TestMarshalMatchesProtojson: on random messages of every type, the fast
// encoder writes protojson's bytes (spaces aside) or hands the message to
// protojson, and only where that is protojson's to decide.
func TestMarshalMatchesProtojson(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, proto0 := range messages(t) {
		name := proto0.ProtoReflect().Descriptor().FullName()
		fast, slowOK := 0, 0
		for range 3000 {
			m := proto0.ProtoReflect().New().Interface()
			fill(r, m.ProtoReflect(), 0)
			want, werr := protoMarshal.Marshal(m)
			var e pbjson.Encoder
			m.(pbjson.Marshaler).MarshalProtoJSON(&e)
			got, fastOK := pbjson.EncoderBytes(&e)
			if werr == nil {
				slowOK++
			}
			if !fastOK {
				continue
			}
			fast++
			if werr != nil {
				t.Fatalf("%s: fast path wrote %s where protojson refuses: %v", name, got, werr)
			}
			if w := compact(t, want); !bytes.Equal(got, w) {
				t.Fatalf("%s:\nfast      %s\nprotojson %s", name, got, w)
			}
			// And the bytes Marshal returns are those.
			b, err := pbjson.Marshal(m)
			if err != nil || !bytes.Equal(b, got) {
				t.Fatalf("%s: Marshal = %s, %v; want %s", name, b, err, got)
			}
		}
		// Most random messages hold invalid UTF-8 or an odd timestamp
		// somewhere; the fast path must still carry the ordinary ones.
		if fast == 0 || fast < slowOK/4 {
			t.Errorf("%s: fast path wrote %d of %d messages protojson wrote", name, fast, slowOK)
		}
	}
}

// TestUnmarshalReadsProtojson: whatever protojson writes (with its random
// spaces) the fast decoder reads, to an equal message.
func TestUnmarshalReadsProtojson(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, proto0 := range messages(t) {
		name := proto0.ProtoReflect().Descriptor().FullName()
		for range 2000 {
			m := proto0.ProtoReflect().New().Interface()
			fill(r, m.ProtoReflect(), 0)
			data, err := protoMarshal.Marshal(m)
			if err != nil {
				continue
			}
			got := proto0.ProtoReflect().New().Interface()
			if !pbjson.DecodeFast(data, got) {
				t.Fatalf("%s: fast path refused protojson's own output %s", name, data)
			}
			want := proto0.ProtoReflect().New().Interface()
			if err := protoUnmarshal.Unmarshal(data, want); err != nil {
				t.Fatalf("%s: protojson cannot read its output %s: %v", name, data, err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("%s: read %s\nfast      %v\nprotojson %v", name, data, got, want)
			}
		}
	}
}
