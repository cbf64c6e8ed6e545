//go:build unix

package closure

import (
	"os"
	"syscall"
)

// readFile returns the contents of the file at path in buf, grown if the
// file does not fit, with os.ReadFile's errors. It is os.ReadFile without
// what an *os.File costs: per file, os.ReadFile makes ten system calls
// (openat, four fcntl and an epoll_ctl to try the poller, fstat, read,
// read to EOF, close) and allocates the file and its buffer; this makes
// four and allocates nothing but the C string of the path.
func readFile(path string, buf []byte) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	buf = buf[:cap(buf)]
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, 0)
			buf = buf[:cap(buf)]
		}
		m, err := syscall.Read(fd, buf[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return buf[:n], nil
		}
		n += m
	}
}
