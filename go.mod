module github.com/mosaicstack/wsauth

go 1.23

require (
	github.com/coder/websocket v1.8.15 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/sync v0.25.0 // indirect
)
