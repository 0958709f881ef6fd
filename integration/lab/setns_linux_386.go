//go:build linux

package lab

// The syscall package does not define SYS_SETNS on 386.
const sysSetns = 346
