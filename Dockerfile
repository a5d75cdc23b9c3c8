# syntax=docker/dockerfile:1
#
# webhook-outbox: a static binary on a distroless base, run as a non-root
# user. Build: docker build -t webhook-outbox .
# The default command serves /etc/outbox/outbox.yaml; mount your config
# there, or set OUTBOX_CONFIG. See docker-compose.yml for a full setup.

# The Go version follows go.mod's go directive.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0 gives a static binary that needs no libc in the final image.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/outbox ./cmd/outbox

# distroless/static: CA certificates and tzdata, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/outbox /usr/local/bin/outbox
# The nonroot user (uid 65532) of the distroless image.
USER nonroot:nonroot
ENV OUTBOX_CONFIG=/etc/outbox/outbox.yaml
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/outbox"]
CMD ["serve"]
