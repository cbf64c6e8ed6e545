package builder

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/binarycache"
)

// Cache is a binary cache the builder fetches from or pushes to.
type Cache = binarycache.Cache

// DefaultPushTimeout bounds one push of a build's outputs to one cache.
const DefaultPushTimeout = 10 * time.Minute

// fetch makes the .drv closure of drvPath valid in this builder's store,
// from the mesh's cache when one is configured (a no-op for Nix when it is
// valid already). Without a cache the builder shares the evaluator's store.
func (b *build) fetch(ctx context.Context, drvPath string) error {
	if b.cfg.Cache == nil {
		return nil
	}
	return b.cfg.Cache.FetchDerivations(ctx, []string{drvPath})
}

// push copies the outputs of a successful build to the mesh's cache and
// to every upstream cache. A failed push does not change the verdict (the
// outputs are valid here, Nix said so): a builder that then lacks them
// builds them itself from the .drv, so it is logged, not reported.
func (b *build) push(ctx context.Context, drvPath string, log zerolog.Logger) {
	timeout := b.cfg.PushTimeout
	if timeout <= 0 {
		timeout = DefaultPushTimeout
	}
	caches := b.cfg.PushTo
	if b.cfg.Cache != nil {
		caches = append([]binarycache.Cache{*b.cfg.Cache}, caches...)
	}
	for _, c := range caches {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		err := c.PushOutputs(pctx, []string{drvPath})
		cancel()
		if err != nil {
			log.Warn().Err(err).Str("cache", c.URL).Msg("outputs not pushed; builders without them build them again")
			continue
		}
		log.Debug().Str("cache", c.URL).Dur("took", time.Since(start)).Msg("outputs pushed")
	}
}
