// Command gobbytes writes the bytes Go's gob encoder writes for a few net/rpc messages, each
// stream to a file of its own beside it. The unit tests in src/go_bytes.rs read those files,
// produced once:
//
//	go run main.go request   # request.gob
//	go run main.go response  # response.gob
//	go run main.go extras    # extras.gob and nested.gob
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

// dump writes what the encoder has written so far to the file name, and starts afresh.
func dump(name string, b *bytes.Buffer) {
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "cannot write", name+":", err)
		os.Exit(1)
	}
	b.Reset()
}

func main() {
	var b bytes.Buffer
	enc := gob.NewEncoder(&b)
	switch os.Args[1] {
	case "request":
		enc.Encode(Request{"Broker.Publish", 0})
		enc.Encode(PublishRequest{"multiply", Pair{3, 4}})
		enc.Encode(Request{"Broker.Publish", 1})
		enc.Encode(PublishRequest{"multiply", Pair{-5, 0}})
		dump("request.gob", &b)
	case "response":
		enc.Encode(Response{"Broker.Publish", 7, ""})
		enc.Encode(StatusReport{"ok"})
		enc.Encode(Response{"Broker.Publish", 8, "No such topic."})
		enc.Encode(struct{}{})
		dump("response.gob", &b)
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
		dump("extras.gob", &b)
		second := ChannelRequest{
			Topic:  "divide",
			Any:    Wrapper{"outer", Triplet{4, 5, 6}},
			Buffer: 3,
		}
		enc.Encode(second)
		dump("nested.gob", &b)
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
