package bench

import (
	"context"
	"testing"
	"time"
)

func TestScheduleSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Schedule(ctx, t.TempDir(), 3000, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
}
