// The lab's miner: creates its topic with buffer 10 and publishes a random Pair to it every
// second. The flags after -topic are for tests and benchmarks.
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"net/rpc"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"pairbroker.test/golab/stubs"
)

func main() {
	brokerAddr := flag.String("broker", "127.0.0.1:8030", "Address of broker instance")
	topic := flag.String("topic", "multiply", "Topic to publish to")
	interval := flag.Duration("interval", time.Second, "Pause between two jobs of one publisher; 0 publishes as fast as the broker takes them")
	count := flag.Int64("count", 0, "How many jobs to publish in all, then exit; 0 publishes until stopped")
	concurrency := flag.Int("concurrency", 1, "How many goroutines publish at once on the one client")
	triplets := flag.Bool("triplets", false, "Publish Triplets instead of Pairs (Part 3)")
	seed := flag.Int64("seed", 0, "Seed of the random jobs; 0 seeds from the clock")
	quiet := flag.Bool("quiet", false, "Print no line per job")
	flag.Parse()
	if *seed == 0 {
		*seed = time.Now().UnixNano()
	}
	random := rand.New(rand.NewSource(*seed))
	var randomLock sync.Mutex // a rand.Rand is not safe for concurrent use

	client, err := rpc.Dial("tcp", *brokerAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot reach the broker:", err)
		os.Exit(1)
	}
	status := new(stubs.StatusReport)
	err = client.Call(stubs.CreateChannel, stubs.ChannelRequest{Topic: *topic, Buffer: 10}, status)
	if err != nil {
		fmt.Fprintln(os.Stderr, "RPC client returned error:", err)
		os.Exit(1)
	}

	var taken, published int64
	var stopping int32
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		atomic.StoreInt32(&stopping, 1)
		// A publish waiting for room in a full topic may never return: a second signal
		// does not wait for it.
		<-signals
		os.Exit(1)
	}()

	var publishers sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		publishers.Add(1)
		go func() {
			defer publishers.Done()
			for atomic.LoadInt32(&stopping) == 0 {
				if *count > 0 && atomic.AddInt64(&taken, 1) > *count {
					return
				}
				var request interface{}
				var job string
				randomLock.Lock()
				if *triplets {
					t := stubs.Triplet{X: random.Intn(999999), Y: random.Intn(999999), Z: random.Intn(999999)}
					request = stubs.TripletRequest{Topic: *topic, Triplet: t}
					job = fmt.Sprintf("%d, %d and %d", t.X, t.Y, t.Z)
				} else {
					p := stubs.Pair{X: random.Intn(999999999), Y: random.Intn(999999999)}
					request = stubs.PublishRequest{Topic: *topic, Pair: p}
					job = fmt.Sprintf("%d and %d", p.X, p.Y)
				}
				randomLock.Unlock()
				err := client.Call(stubs.Publish, request, new(stubs.StatusReport))
				if err != nil {
					fmt.Fprintln(os.Stderr, "RPC client returned error:", err)
					fmt.Printf("published %d jobs\n", atomic.LoadInt64(&published))
					os.Exit(1)
				}
				atomic.AddInt64(&published, 1)
				if !*quiet {
					fmt.Printf("published %s to %s\n", job, *topic)
				}
				if *interval > 0 {
					time.Sleep(*interval)
				}
			}
		}()
	}
	publishers.Wait()
	fmt.Printf("published %d jobs\n", atomic.LoadInt64(&published))
}
