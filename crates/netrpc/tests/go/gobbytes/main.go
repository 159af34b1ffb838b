// Command gobbytes prints the bytes Go's gob encoder writes for a few net/rpc messages, as
// Rust byte-array literals. The unit tests in src/go_bytes.rs hold its output, produced once:
//
//	go run main.go request
//	go run main.go response
//	go run main.go extras
//
// Each run is a fresh process, so its types are numbered from 65 as our encoder numbers them.
package main

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"os"
	"time"
)

// Request and Response have the fields of net/rpc's headers.
type Request struct {
	ServiceMethod string
	Seq           uint64
}
type Response struct {
	ServiceMethod string
	Seq           uint64
	Error         string
}

type Pair struct{ X, Y int }
type Triplet struct{ X, Y, Z int }
type PublishRequest struct {
	Topic string
	Pair  Pair
}
type StatusReport struct{ Message string }

// Wrapper holds an interface inside a value that is itself sent in an interface.
type Wrapper struct {
	Label string
	Inner interface{}
}

// ChannelRequest carries, besides the lab's two fields, one field of every other gob kind,
// as a student's extended client might.
type ChannelRequest struct {
	Topic   string
	Tags    []string
	Meta    map[string]int
	Grid    [2]int
	Ratio   float64
	Wave    complex128
	Raw     []byte
	Any     interface{}
	When    time.Time
	History []Pair
	Flag    bool
	Count   uint
	Buffer  int
}

func dump(label string, b *bytes.Buffer) {
	fmt.Printf("// %s\n&[", label)
	for i, c := range b.Bytes() {
		if i%16 == 0 {
			fmt.Printf("\n   ")
		}
		fmt.Printf(" 0x%02x,", c)
	}
	fmt.Printf("\n]\n")
	b.Reset()
}

func main() {
	var b bytes.Buffer
	enc := gob.NewEncoder(&b)
	switch os.Args[1] {
	case "request":
		enc.Encode(Request{"Broker.Publish", 0})
		dump("header0", &b)
		enc.Encode(PublishRequest{"multiply", Pair{3, 4}})
		dump("body0", &b)
		enc.Encode(Request{"Broker.Publish", 1})
		dump("header1", &b)
		enc.Encode(PublishRequest{"multiply", Pair{-5, 0}})
		dump("body1", &b)
	case "response":
		enc.Encode(Response{"Broker.Publish", 7, ""})
		enc.Encode(StatusReport{"ok"})
		dump("ok", &b)
		enc.Encode(Response{"Broker.Publish", 8, "No such topic."})
		enc.Encode(struct{}{})
		dump("error", &b)
	case "extras":
		gob.Register(Pair{})
		gob.Register(Wrapper{})
		gob.Register(Triplet{})
		first := ChannelRequest{
			Topic:   "multiply",
			Tags:    []string{"a", "b"},
			Meta:    map[string]int{"k": 1},
			Grid:    [2]int{7, 8},
			Ratio:   0.5,
			Wave:    complex(1, -1),
			Raw:     []byte{1, 2, 3},
			Any:     Pair{1, 2},
			When:    time.Date(2000, 1, 2, 3, 4, 5, 0, time.UTC),
			History: []Pair{{1, 2}, {3, 4}},
			Flag:    true,
			Count:   9,
			Buffer:  10,
		}
		enc.Encode(first)
		dump("extras", &b)
		second := ChannelRequest{
			Topic:  "divide",
			Any:    Wrapper{"outer", Triplet{4, 5, 6}},
			Buffer: 3,
		}
		enc.Encode(second)
		dump("nested interfaces", &b)
		// Check that Go reads back what it wrote.
		var again bytes.Buffer
		enc = gob.NewEncoder(&again)
		enc.Encode(first)
		enc.Encode(second)
		dec := gob.NewDecoder(&again)
		for i := 0; i < 2; i++ {
			var got ChannelRequest
			if err := dec.Decode(&got); err != nil {
				fmt.Fprintln(os.Stderr, "Go cannot read it back:", err)
				os.Exit(1)
			}
			fmt.Fprintf(os.Stderr, "read back: %+v\n", got)
		}
	}
}
