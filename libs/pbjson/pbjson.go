package pbjson

import (
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Marshaler is implemented by generated messages.
type Marshaler interface {
	MarshalProtoJSON(e *Encoder)
}

// Unmarshaler is implemented by generated messages.
type Unmarshaler interface {
	UnmarshalProtoJSON(d *Decoder)
}

var (
	slowMarshal   = protojson.MarshalOptions{UseProtoNames: true}
	slowUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// Marshal writes m as protojson with proto field names would.
func Marshal(m proto.Message) ([]byte, error) {
	if f, ok := m.(Marshaler); ok {
		e := Encoder{buf: make([]byte, 0, 256)}
		f.MarshalProtoJSON(&e)
		if !e.bad {
			return e.buf, nil
		}
	}
	return slowMarshal.Marshal(m)
}

// Size is len(Marshal(m)) (0 when m cannot be marshalled).
func Size(m proto.Message) int {
	b, _ := Marshal(m)
	return len(b)
}

// Unmarshal reads data into m as protojson with DiscardUnknown would,
// replacing what m held.
func Unmarshal(data []byte, m proto.Message) error {
	if u, ok := m.(Unmarshaler); ok {
		proto.Reset(m)
		d := Decoder{data: data}
		u.UnmarshalProtoJSON(&d)
		if d.finish() {
			return nil
		}
	}
	return slowUnmarshal.Unmarshal(data, m) // resets m too
}
