// Package stubs is the lab skeleton's stubs, unchanged, and the Triplet types of Part 3 in the
// shape students give them.
package stubs

var CreateChannel = "Broker.CreateChannel"
var Publish = "Broker.Publish"
var Subscribe = "Broker.Subscribe"
var Multiply = "Factory.Multiply"
var Divide = "Factory.Divide"

type Pair struct {
	X int
	Y int
}

type PublishRequest struct {
	Topic string
	Pair  Pair
}

type ChannelRequest struct {
	Topic  string
	Buffer int
}

type Subscription struct {
	Topic          string
	FactoryAddress string
	Callback       string
}

type JobReport struct {
	Result int
}

type StatusReport struct {
	Message string
}

// Part 3.

type Triplet struct {
	X, Y, Z int
}

// TripletRequest is a PublishRequest whose job field is named Triplet instead of Pair: gob
// matches fields by name, so this is how the broker tells a published Triplet from a Pair.
type TripletRequest struct {
	Topic   string
	Triplet Triplet
}
