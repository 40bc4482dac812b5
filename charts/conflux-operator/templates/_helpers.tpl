{{- define "conflux-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "conflux-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "conflux-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conflux-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "conflux-operator.labels" -}}
{{ include "conflux-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "conflux-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "conflux-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator pods' labels as key=value,... for CONFLUX_OPERATOR_POD_LABELS. */}}
{{- define "conflux-operator.podLabelList" -}}
{{- $labels := include "conflux-operator.selectorLabels" . | fromYaml -}}
{{- $pairs := list -}}
{{- range $key := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (get $labels $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* What the reconcile loop does to a cluster's workload: never Secrets, never PVC deletion. */}}
{{- define "conflux-operator.workloadRules" -}}
# Watch clusters; write their status (intent, members, conditions).
- apiGroups: ["conflux.io"]
  resources: ["confluxclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["conflux.io"]
  resources: ["confluxclusters/status"]
  verbs: ["get", "patch"]
# Quorum-loss recovery removes its annotation once acted on.
- apiGroups: ["conflux.io"]
  resources: ["confluxclusters"]
  verbs: ["patch"]
# Backups: run on-demand ones, create scheduled ones, delete expired ones; write their status.
- apiGroups: ["conflux.io"]
  resources: ["confluxbackups"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["conflux.io"]
  resources: ["confluxbackups/status"]
  verbs: ["get", "patch"]
# Owned workload, applied with server-side apply; watched for changes.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
# The cluster's NetworkPolicy; deleted when spec.networkPolicy.enabled is false.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch", "delete"]
# With spec.tls.mode CertManager: the members' Certificate, server-side applied.
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["create", "patch"]
# Pods are observed; deleted one at a time for rolling restarts and volume recycling.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# Volumes are observed (which ordinals have one, which outlived a deleted cluster).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Only where clusters live: the token Secret and scale-down volume deletion. */}}
{{- define "conflux-operator.secretAndVolumeRules" -}}
# The cluster token: created once, then read (an admin token added to an old one). With
# spec.tls.mode Auto, the CA Secret (created once) and the members' certificates (rewritten on
# renewal, guarded by resourceVersion).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "update"]
# Volumes of removed members are deleted after the membership change is committed; a volume is
# labelled with its cluster's uid (conflux.io/cluster-uid) to recognize kept ones later.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["patch", "delete"]
{{- end -}}
