package eventlog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"
)

// ChangeID names a change: the same repository and commits always give the
// same id, so a repeated request joins the change already under way.
func ChangeID(repoURL, headCommit, baseCommit string) string {
	return digest("change", repoURL, headCommit, baseCommit)
}

// CheckID names one check of a change.
func CheckID(changeID, check string) string { return digest("check", changeID, check) }

// JobsetID names one job of a change.
func JobsetID(changeID, job string) string { return digest("jobset", changeID, job) }

func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:20]
}

// DrvID is a derivation's aggregate id: the hash part of its store path,
// /nix/store/<hash>-<name>.drv. It is unique per derivation and a valid
// subject token (Nix base32 has no dots or wildcards).
func DrvID(drvPath string) (string, error) {
	base := path.Base(drvPath)
	hash, _, ok := strings.Cut(base, "-")
	if !ok || len(hash) != 32 || !ValidToken(hash) || !strings.HasSuffix(base, ".drv") {
		return "", fmt.Errorf("%q is not a derivation store path", drvPath)
	}
	return hash, nil
}

// ContributorID is the aggregate id of a GitHub login's approvals: the
// login in lower case (GitHub compares logins without case, and a login
// is letters, digits and hyphens, a subject token), or, for anything
// else, "_" and a digest (no login starts with "_").
func ContributorID(login string) string {
	l := strings.ToLower(login)
	if ValidToken(l) {
		return l
	}
	return "_" + digest("contributor", l)
}

// BuilderID is the aggregate id of a builder's drains and resumes: its
// name when that is a subject token (as "local" and host names are),
// else "_" and a digest of it.
func BuilderID(name string) string {
	if ValidToken(name) && !strings.HasPrefix(name, "_") {
		return name
	}
	return "_" + digest("builder", name)
}

// SystemToken makes a Nix system name safe as a subject token: systems are
// normally already tokens (x86_64-linux); anything else is hex-encoded.
func SystemToken(system string) string {
	if ValidToken(system) {
		return system
	}
	return "x" + hex.EncodeToString([]byte(system))
}
