package admin

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ekaci/ekaci/libs/action"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// ActorHeader is the metadata key a client names its user in (ekactl
// sends $USER); the name is recorded with the transport it came over
// ("unix:alice", "token:alice").
const ActorHeader = "x-ekaci-actor"

// acts lists the methods that append facts.
var acts = map[string]bool{
	adminv1.Admin_Retry_FullMethodName:              true,
	adminv1.Admin_CancelJobset_FullMethodName:       true,
	adminv1.Admin_CancelChange_FullMethodName:       true,
	adminv1.Admin_RestartJobset_FullMethodName:      true,
	adminv1.Admin_ApproveContributor_FullMethodName: true,
	adminv1.Admin_RevokeContributor_FullMethodName:  true,
	adminv1.Admin_DrainBuilder_FullMethodName:       true,
	adminv1.Admin_ResumeBuilder_FullMethodName:      true,
	adminv1.Admin_RebuildReadModel_FullMethodName:   true,
}

// auth decides who may call what: anyone who can open the unix socket
// (mode 0600) may call anything; over TCP, a call that acts needs the
// bearer token, and so does a read unless reads are open. Health and
// reflection are not ekaci's and are open.
type auth struct {
	token     string
	openReads bool
}

func (a auth) check(ctx context.Context, method string) error {
	if !strings.HasPrefix(method, "/"+adminv1.Admin_ServiceDesc.ServiceName+"/") {
		return nil
	}
	if overUnix(ctx) {
		return nil
	}
	if !acts[method] && a.openReads {
		return nil
	}
	if a.token == "" {
		return status.Error(codes.PermissionDenied, "no admin token is configured (--admin-token): over TCP only open reads are allowed; act over the unix socket")
	}
	got, ok := bearer(ctx)
	switch {
	case !ok:
		return status.Error(codes.Unauthenticated, "this call needs a bearer token (authorization: Bearer <token>)")
	case subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1:
		return status.Error(codes.Unauthenticated, "the bearer token is not the admin token")
	}
	return nil
}

func (a auth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a auth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

func overUnix(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && p.Addr != nil && p.Addr.Network() == "unix"
}

func bearer(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok && t != "" {
			return t, true
		}
	}
	return "", false
}

// actor is who a call acts as: the name the client gave (or "anonymous")
// with the transport it came over.
func actor(ctx context.Context, reason string) *eventsv1.Actor {
	md, _ := metadata.FromIncomingContext(ctx)
	name := "anonymous"
	if v := md.Get(ActorHeader); len(v) > 0 && v[0] != "" {
		name = v[0]
	}
	via := "token"
	if overUnix(ctx) {
		via = "unix"
	}
	return &eventsv1.Actor{Who: fmt.Sprintf("%s:%s", via, bound(name, 64)), Source: action.SourceAdmin, Reason: bound(reason, 1024)}
}

// bound keeps the first n bytes of s, cut at a rune boundary.
func bound(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}
