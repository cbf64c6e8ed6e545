package githubtest

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// verifyJWT checks an App's "Bearer <jwt>" as GitHub does: RS256 signed
// by the App's key, issued by the App, at most 10 minutes long, issued no
// later than 60 s from now, not expired.
func (s *Server) verifyJWT(auth string) error {
	raw, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return errors.New("no App JWT (want Authorization: Bearer <jwt>)")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return fmt.Errorf("JWT has %d parts, want 3", len(parts))
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := decodePart(parts[0], &header); err != nil {
		return fmt.Errorf("JWT header: %w", err)
	}
	if header.Alg != "RS256" {
		return fmt.Errorf("JWT alg %q, want RS256", header.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("JWT signature: %w", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&s.Key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("JWT signature does not verify against the App's public key: %w", err)
	}
	var claims struct {
		Iss json.RawMessage `json:"iss"`
		Iat int64           `json:"iat"`
		Exp int64           `json:"exp"`
	}
	if err := decodePart(parts[1], &claims); err != nil {
		return fmt.Errorf("JWT claims: %w", err)
	}
	iss := strings.Trim(string(claims.Iss), `"`)
	if iss != strconv.FormatInt(s.AppID, 10) {
		return fmt.Errorf("JWT issuer %s, want the App id %d", claims.Iss, s.AppID)
	}
	now := s.now().Unix()
	switch {
	case claims.Iat == 0 || claims.Exp == 0:
		return errors.New("JWT lacks iat or exp")
	case claims.Iat > now+60:
		return fmt.Errorf("JWT issued %d s in the future", claims.Iat-now)
	case claims.Exp <= now:
		return fmt.Errorf("JWT expired %s ago", time.Duration(now-claims.Exp)*time.Second)
	case claims.Exp-claims.Iat > 600:
		return fmt.Errorf("JWT lives %d s, GitHub allows 600", claims.Exp-claims.Iat)
	}
	return nil
}

func decodePart(part string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
