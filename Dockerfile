# Builds the taskledger binary into a small image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/taskledger ./cmd/taskledger

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/taskledger /taskledger
EXPOSE 8080
ENTRYPOINT ["/taskledger"]
CMD ["serve"]
