//go:build !unix

package closure

import "os"

// readFile returns the contents of the file at path (buf is for the unix
// version, which reads into it).
func readFile(path string, buf []byte) ([]byte, error) { return os.ReadFile(path) }
