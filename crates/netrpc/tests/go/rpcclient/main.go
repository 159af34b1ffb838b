// Command rpcclient is a Go net/rpc client, as the lab's miners and factories are, calling
// the Rust test server of tests/go_client_interop.rs at the address given as its argument.
// It checks every answer itself, prints "ok <check>" for each, and exits 1 at the first
// wrong one.
package main

import (
	"encoding/gob"
	"fmt"
	"net/rpc"
	"os"
	"strings"
	"sync"
	"time"
)

type ChannelRequest struct {
	Topic  string
	Buffer int
}
type Pair struct{ X, Y int }
type PublishRequest struct {
	Topic string
	Pair  Pair
}

// Triplet and TripletRequest are Part 3's variant: the same topic, three integers.
type Triplet struct{ X, Y, Z int }
type TripletRequest struct {
	Topic   string
	Triplet Triplet
}
type Subscription struct {
	Topic          string
	FactoryAddress string
	Callback       string
}
type StatusReport struct{ Message string }
type JobReport struct{ Result int }

// Wrapper travels inside an interface and holds one itself.
type Wrapper struct {
	Label string
	Inner interface{}
}

// ExtendedChannelRequest is a ChannelRequest with a field of every other gob kind.
type ExtendedChannelRequest struct {
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

// BadChannelRequest sends Topic as an int.
type BadChannelRequest struct {
	Topic  int
	Buffer int
}

// The concrete types sent inside interfaces must be named to gob.
func init() {
	gob.Register(Wrapper{})
	gob.Register(Triplet{})
}

const callTimeout = 10 * time.Second

// Gathered is how many calls the server holds until all have arrived.
const gathered = 8

func call(client *rpc.Client, method string, args interface{}, reply interface{}) error {
	c := client.Go(method, args, reply, make(chan *rpc.Call, 1))
	select {
	case <-c.Done:
		return c.Error
	case <-time.After(callTimeout):
		return fmt.Errorf("%s: no reply within %v", method, callTimeout)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func status(client *rpc.Client, check, method string, args interface{}, want string) {
	var reply StatusReport
	if err := call(client, method, args, &reply); err != nil {
		fail("%s: %v", check, err)
	}
	if reply.Message != want {
		fail("%s: got %q, want %q", check, reply.Message, want)
	}
	fmt.Println("ok", check)
}

func failing(client *rpc.Client, check, method string, args interface{}, want string) {
	var reply StatusReport
	err := call(client, method, args, &reply)
	if err == nil {
		fail("%s: no error, reply %+v", check, reply)
	}
	if _, remote := err.(rpc.ServerError); !remote || !strings.Contains(err.Error(), want) {
		fail("%s: got error %q (%T), want a server error containing %q", check, err, err, want)
	}
	fmt.Println("ok", check)
}

func main() {
	client, err := rpc.Dial("tcp", os.Args[1])
	if err != nil {
		fail("dial: %v", err)
	}
	defer client.Close()

	status(client, "create channel", "Broker.CreateChannel",
		ChannelRequest{"multiply", 10}, "created multiply with buffer 10")
	status(client, "publish pair", "Broker.Publish",
		PublishRequest{"multiply", Pair{3, -4}}, "published (3, -4) to multiply")
	status(client, "publish zero pair", "Broker.Publish",
		PublishRequest{"multiply", Pair{0, 0}}, "published (0, 0) to multiply")
	status(client, "publish triplet", "Broker.Publish",
		TripletRequest{"multiply", Triplet{1, 2, 3}}, "published (1, 2, 3) to multiply")
	status(client, "subscribe", "Broker.Subscribe",
		Subscription{"multiply", "127.0.0.1:8050", "Factory.Multiply"},
		"subscribed 127.0.0.1:8050 to multiply with Factory.Multiply")
	failing(client, "publish to an unknown topic", "Broker.Publish",
		PublishRequest{"nosuch", Pair{1, 2}}, "No such topic.")
	failing(client, "topic sent as an int", "Broker.CreateChannel",
		BadChannelRequest{7, 1}, "field Topic is a int, not a string")
	failing(client, "unknown method", "Broker.Nothing", ChannelRequest{}, "unknown method Broker.Nothing")
	status(client, "extra fields of every kind", "Broker.CreateChannel", ExtendedChannelRequest{
		Topic: "extended", Tags: []string{"a", "b"}, Meta: map[string]int{"k": 1},
		Grid: [2]int{7, 8}, Ratio: 0.5, Wave: complex(1, -1), Raw: []byte{1, 2, 3},
		Any:  Wrapper{"outer", Triplet{4, 5, 6}},
		When: time.Date(2000, 1, 2, 3, 4, 5, 0, time.UTC), History: []Pair{{1, 2}, {3, 4}},
		Flag: true, Count: 9, Buffer: 7,
	}, "created extended with buffer 7")

	var report JobReport
	if err := call(client, "Factory.Multiply", Pair{-6, 7}, &report); err != nil || report.Result != -42 {
		fail("job report: %v %+v", err, report)
	}
	fmt.Println("ok job report")

	// Calls in flight together: the server answers none until all have arrived, so they
	// only complete if they overlap on the connection; each must get its own answer.
	var wg sync.WaitGroup
	errs := make(chan error, gathered)
	for i := 0; i < gathered; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var reply StatusReport
			if err := call(client, "Broker.Gather", ChannelRequest{"gather", i}, &reply); err != nil {
				errs <- err
				return
			}
			if want := fmt.Sprintf("gathered %d", i); reply.Message != want {
				errs <- fmt.Errorf("call %d got %q, want %q", i, reply.Message, want)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail("overlapping calls: %v", err)
	}
	fmt.Println("ok overlapping calls")
}
