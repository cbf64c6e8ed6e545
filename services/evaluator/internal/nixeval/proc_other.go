//go:build !linux

package nixeval

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func killTree(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
