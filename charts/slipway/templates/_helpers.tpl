{{- define "slipway.labels" -}}
app.kubernetes.io/name: slipway
{{- end -}}
