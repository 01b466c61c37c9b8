"""The production driver: real WhatsApp through neonize (whatsmeow in Go), one module per
job (docs/NEONIZE.md lists them). `driver.NeonizeDriver` is the entry point; nothing here
is imported by a worker that runs the simulator, so it never loads the Go library."""
