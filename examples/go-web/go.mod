module example.com/go-web

// +heroku goVersion go1.22
go 1.22

require github.com/google/uuid v1.6.0
