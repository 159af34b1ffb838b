// Command rpcserver is a Go net/rpc server with a factory, as the lab's factories are, for
// tests/go_server_interop.rs. It listens on a free loopback port, prints
// "listening <address>" and serves until killed.
package main

import (
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"sync"
	"time"
)

type Pair struct{ X, Y int }
type JobReport struct{ Result int }

// gatherTimeout bounds how long Gather waits for the other calls, so that a test that
// breaks never leaves a call hanging for ever.
const gatherTimeout = 10 * time.Second

type Factory struct {
	mu      sync.Mutex
	arrived int
	all     chan struct{}
	want    int
}

func (f *Factory) Multiply(p Pair, r *JobReport) error {
	r.Result = p.X * p.Y
	return nil
}

func (f *Factory) Divide(p Pair, r *JobReport) error {
	if p.Y == 0 {
		return errors.New("division by zero")
	}
	r.Result = p.X / p.Y
	return nil
}

// Sleep answers Y after X milliseconds.
func (f *Factory) Sleep(p Pair, r *JobReport) error {
	time.Sleep(time.Duration(p.X) * time.Millisecond)
	r.Result = p.Y
	return nil
}

// Gather answers X once Y calls of Gather have arrived.
func (f *Factory) Gather(p Pair, r *JobReport) error {
	f.mu.Lock()
	if f.all == nil {
		f.all = make(chan struct{})
		f.want = p.Y
	}
	all := f.all
	f.arrived++
	if f.arrived == f.want {
		close(f.all)
		f.all, f.arrived = nil, 0
	}
	f.mu.Unlock()
	select {
	case <-all:
		r.Result = p.X
		return nil
	case <-time.After(gatherTimeout):
		return errors.New("not all calls arrived")
	}
}

func main() {
	if err := rpc.Register(new(Factory)); err != nil {
		fmt.Println("register:", err)
		os.Exit(1)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("listening", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			return
		}
		go rpc.ServeConn(conn)
	}
}
