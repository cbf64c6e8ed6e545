// Package deploy holds how ekaci is deployed: images (deploy/images),
// the compose mesh (deploy/compose), Kubernetes manifests (deploy/k8s)
// and the NATS cluster configuration (deploy/nats); its Go code is the
// images' health probe and the tests that check all of them.
package deploy
