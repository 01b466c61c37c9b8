"""Dev-only tooling: the local stack (PostgreSQL, Redis, etcd, a Kubernetes control plane and
a real node: containerd, kubelet, kube-proxy, CoreDNS, kube-router), its images and the demo.
Not part of the product package or image."""
