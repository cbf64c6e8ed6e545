// Command ekaci-probe is the health check of ekaci's images, which have no
// shell, curl or wget: it asks one URL and exits 0 when the answer is
// 200 OK, 1 otherwise (saying why on stderr), within two seconds.
//
//	ekaci-probe http://127.0.0.1:9090/healthz
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: ekaci-probe URL")
		os.Exit(2)
	}
	if err := probe(os.Args[1], 2*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "ekaci-probe:", err)
		os.Exit(1)
	}
}

func probe(url string, timeout time.Duration) error {
	c := http.Client{Timeout: timeout}
	r, err := c.Get(url)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 512))
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, r.Status, body)
	}
	return nil
}
