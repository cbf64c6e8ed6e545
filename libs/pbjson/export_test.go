package pbjson

import "google.golang.org/protobuf/proto"

// EncoderBytes is what e wrote and whether the fast path managed it.
func EncoderBytes(e *Encoder) ([]byte, bool) { return e.buf, !e.bad && len(e.buf) > 0 }

// DecodeFast reads data into m (empty) by the fast path alone.
func DecodeFast(data []byte, m proto.Message) bool {
	d := Decoder{data: data}
	m.(Unmarshaler).UnmarshalProtoJSON(&d)
	return d.finish()
}
