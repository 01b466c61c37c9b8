"""Dev-only tooling: the local stack (PostgreSQL, Redis, etcd, a Kubernetes control plane and
a node agent that runs pods as local processes). Not part of the product package or image."""
