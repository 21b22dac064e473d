{{/*
The chart name, or nameOverride.
*/}}
{{- define "waymark.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, else the release name
(with the chart name appended unless the release name contains it). At most 52
characters, so that "data-<fullname>" and "<fullname>-dns-public" stay valid DNS labels.
*/}}
{{- define "waymark.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "waymark.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "waymark.labels" -}}
helm.sh/chart: {{ include "waymark.chart" . }}
{{ include "waymark.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: waymark
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels selecting the release's pods.
*/}}
{{- define "waymark.selectorLabels" -}}
app.kubernetes.io/name: {{ include "waymark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount Waymark runs as.
*/}}
{{- define "waymark.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "waymark.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease's name.
*/}}
{{- define "waymark.leaseName" -}}
{{- default (include "waymark.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The container image: repository, then @digest or :tag (default: appVersion).
*/}}
{{- define "waymark.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The claim holding the registry.
*/}}
{{- define "waymark.claimName" -}}
{{- default (printf "%s-data" (include "waymark.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}
