//go:build linux

package lab

// The syscall package does not define SYS_SETNS on amd64.
const sysSetns = 308
