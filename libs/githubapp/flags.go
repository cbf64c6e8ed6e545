package githubapp

import (
	"flag"

	"github.com/ekaci/ekaci/libs/flagenv"
)

// Flags are the command-line flags (and EKACI_* variables) of the App.
type Flags struct {
	AppID      int64
	PrivateKey string
	APIURL     string
}

// AddFlags defines --github-app-id, --github-private-key (a secret: also
// EKACI_GITHUB_PRIVATE_KEY_FILE) and --github-api-url on fs.
func AddFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.Int64Var(&f.AppID, "github-app-id", 0, "the GitHub App's id (its settings page); 0: no GitHub App")
	fs.StringVar(&f.PrivateKey, "github-private-key", "", "the GitHub App's private key, PEM (or EKACI_GITHUB_PRIVATE_KEY_FILE: the downloaded .pem)")
	flagenv.Secret(fs, "github-private-key")
	fs.StringVar(&f.APIURL, "github-api-url", DefaultBaseURL, "GitHub's REST API (GitHub Enterprise Server: https://HOST/api/v3)")
	return f
}

// Configured reports whether an App was given.
func (f *Flags) Configured() bool { return f.AppID != 0 || f.PrivateKey != "" }

// App returns the App the flags describe, or ErrNotConfigured.
func (f *Flags) App() (*App, error) {
	return New(Config{AppID: f.AppID, PrivateKey: []byte(f.PrivateKey), BaseURL: f.APIURL})
}
