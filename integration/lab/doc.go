// Package lab builds a real multi-host IPv4 network on one Linux machine for
// integration tests and benchmarks of flock.
//
// Every host is a Linux network namespace with a loopback interface and an
// "eth0" interface (198.51.100.(10+index)/24, TEST-NET-2). Each eth0 is one end
// of a veth pair whose other end is attached to the bridge "br0", which lives
// in a namespace of its own. Nothing is ever created in the root (initial)
// network namespace, so no packet can leave the machine.
//
// The bridge floods multicast to every port (IGMP snooping is off) and every
// host has a route 224.0.0.0/4 dev eth0, so multicast heartbeats sent or joined
// on the default interface reach every other host whose link is up.
//
// Labs are independent of each other: every lab has its own bridge
// namespace, and namespace names carry the process id and a per-process lab
// counter, so several labs can exist at once (parallel tests, one lab
// each). Their hosts reuse the same addresses, which never meet: the labs'
// bridges are not connected, so neither unicast nor multicast crosses from
// one lab to another.
//
// The package needs Linux, root, and the iproute2 tools ip and tc; call
// Available and skip when it reports an error. All functionality lives in files
// built only on Linux.
package lab
