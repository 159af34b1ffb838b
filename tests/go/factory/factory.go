// The students' factory of the lab, Parts 1 to 3: serves Multiply and Divide, subscribes to
// the broker's multiply and divide topics, and publishes a Divide job for every two Multiply
// results. The flags after -broker leave parts out, or make it fail as students' factories
// fail, for the marking tests.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"os/signal"
	"syscall"

	"pairbroker.test/golab/stubs"
)

var panicOnZero = flag.Bool("panic-on-zero", false, "Divide naively, so that a zero divisor panics the whole factory, as the Go original does")

// pipe hands each Multiply result to the pipeline, if there is one.
type pipe chan int

func (p pipe) send(result int) {
	if p != nil {
		p <- result
	}
}

// Factory serves Pairs (Parts 1 and 2).
type Factory struct {
	results pipe
}

func (f *Factory) Multiply(req stubs.Pair, res *stubs.JobReport) error {
	res.Result = req.X * req.Y
	fmt.Printf("%d * %d = %d\n", req.X, req.Y, res.Result)
	f.results.send(res.Result)
	return nil
}

func (f *Factory) Divide(req stubs.Pair, res *stubs.JobReport) error {
	if req.Y == 0 && !*panicOnZero {
		fmt.Printf("%d / %d failed: division by zero\n", req.X, req.Y)
		return errors.New("division by zero")
	}
	res.Result = req.X / req.Y
	fmt.Printf("%d / %d = %d\n", req.X, req.Y, res.Result)
	return nil
}

// TripletFactory serves Triplets (Part 3), under the same name "Factory". net/rpc fixes a
// procedure's argument type when it is registered, and gob matches fields by name and leaves
// zero fields off the wire, so a Pair and a Triplet whose Z is 0 arrive alike: neither a
// non-zero Z nor a *int Z can tell them apart. So the factory is told with -triplets that it
// serves Part 3, where every job has three numbers; a Pair sent to it would be taken as Z = 0.
type TripletFactory struct {
	results pipe
}

func (f *TripletFactory) Multiply(req stubs.Triplet, res *stubs.JobReport) error {
	res.Result = req.X * req.Y * req.Z
	fmt.Printf("%d * %d * %d = %d\n", req.X, req.Y, req.Z, res.Result)
	f.results.send(res.Result)
	return nil
}

// Divide of three numbers divides left to right: (x / y) / z.
func (f *TripletFactory) Divide(req stubs.Triplet, res *stubs.JobReport) error {
	if (req.Y == 0 || req.Z == 0) && !*panicOnZero {
		fmt.Printf("(%d / %d) / %d failed: division by zero\n", req.X, req.Y, req.Z)
		return errors.New("division by zero")
	}
	res.Result = (req.X / req.Y) / req.Z
	fmt.Printf("(%d / %d) / %d = %d\n", req.X, req.Y, req.Z, res.Result)
	return nil
}

// pipeline publishes a Divide job for every `size` Multiply results: a Pair of two results,
// or with -triplets a Triplet of three.
func pipeline(broker *rpc.Client, results pipe, size int) {
	var group []int
	for result := range results {
		group = append(group, result)
		if len(group) < size {
			continue
		}
		var request interface{} = stubs.PublishRequest{Topic: "divide", Pair: stubs.Pair{X: group[0], Y: group[1]}}
		if size == 3 {
			request = stubs.TripletRequest{Topic: "divide", Triplet: stubs.Triplet{X: group[0], Y: group[1], Z: group[2]}}
		}
		if err := broker.Call(stubs.Publish, request, new(stubs.StatusReport)); err != nil {
			fmt.Fprintln(os.Stderr, "cannot publish to divide:", err)
		}
		group = nil
	}
}

func main() {
	ip := flag.String("ip", "127.0.0.1:8050", "IP:port this factory listens on, given to the broker")
	brokerAddr := flag.String("broker", "127.0.0.1:8030", "Address of broker instance")
	triplets := flag.Bool("triplets", false, "Serve Part 3: every job is a Triplet, and the pipeline groups results by three")
	noDivide := flag.Bool("no-divide", false, "Do not subscribe to divide")
	noPipeline := flag.Bool("no-pipeline", false, "Do not publish Divide jobs from Multiply results")
	subscribeTimes := flag.Int("subscribe-times", 1, "Subscribe this many times to each topic, for as many calls in flight")
	flag.Parse()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)

	var results pipe
	if !*noPipeline {
		results = make(pipe)
	}
	groupSize := 2
	if *triplets {
		groupSize = 3
		rpc.RegisterName("Factory", &TripletFactory{results: results})
	} else {
		rpc.Register(&Factory{results: results})
	}
	// Listen before subscribing: the broker calls back as soon as it has a job.
	listener, err := net.Listen("tcp", *ip)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot listen:", err)
		os.Exit(1)
	}
	defer listener.Close()
	go rpc.Accept(listener)

	broker, err := rpc.Dial("tcp", *brokerAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot reach the broker:", err)
		os.Exit(1)
	}
	if results != nil {
		go pipeline(broker, results, groupSize)
	}
	status := new(stubs.StatusReport)
	for _, topic := range []string{"multiply", "divide"} {
		if err := broker.Call(stubs.CreateChannel, stubs.ChannelRequest{Topic: topic, Buffer: 10}, status); err != nil {
			fmt.Fprintln(os.Stderr, "RPC client returned error:", err)
			os.Exit(1)
		}
	}
	callbacks := map[string]string{"multiply": stubs.Multiply}
	if !*noDivide {
		callbacks["divide"] = stubs.Divide
	}
	// The address actually bound, so that -ip 127.0.0.1:0 works too.
	address := listener.Addr().String()
	for topic, callback := range callbacks {
		for i := 0; i < *subscribeTimes; i++ {
			subscription := stubs.Subscription{Topic: topic, FactoryAddress: address, Callback: callback}
			if err := broker.Call(stubs.Subscribe, subscription, status); err != nil {
				fmt.Fprintln(os.Stderr, "RPC client returned error:", err)
				os.Exit(1)
			}
		}
		fmt.Printf("subscribed to %s as %s\n", topic, address)
	}

	// The broker notices the closed connection and drops this factory's subscriptions.
	<-signals
}
