"""Schemas of the files routes and of an execution's ``knowledge`` (opentess.api.files_wire
builds the answers; tests/test_files_api.py checks them against these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FileStatus = Literal["waiting", "completed", "failed"]


class FileObject(BaseModel):
    """Tess's File object (contract §7), plus what opentess adds."""

    id: int
    object: Literal["file"]
    bytes: int
    created_at: str = Field(description="ISO 8601 with +00:00 (not the Laravel form of other objects)")
    filename: str = Field(description="The uploaded name, sanitized for display")
    credits: float
    status: FileStatus = Field(description="waiting (queued or processing), then completed or failed")
    error: str | None = Field(default=None, description="Why processing failed (failed files only)")
    note: str | None = Field(default=None, description="What the limits left out of a completed file")
    type: str | None = Field(description="The format found in the content: pdf, docx, xlsx, pptx, csv, html, …")
    processed: bool = Field(description="Its text is extracted; false for a file stored with process=false")
    pages: int | None = Field(description="Pages, slides or sheets read")
    chunks: int = Field(description="Pieces its text was cut into for retrieval")


class FileUploadForm(BaseModel):
    """``multipart/form-data``: one ``file`` part and an optional ``process`` part; other parts
    (e.g. ``purpose``) are ignored."""

    file: bytes = Field(json_schema_extra={"format": "binary"}, description="The file (one a request)")
    process: str | None = Field(
        default=None,
        description='"true" to extract its text now; "false" or absent: stored, extracted on first use',
    )


class FilesCount(BaseModel):
    total: int
    completed: int
    failed: int
    in_progress: int


class AgentFilesLinked(BaseModel):
    id: int = Field(description="The agent's id")
    files_count: FilesCount
    files: list[FileObject]
    status: FileStatus = Field(description="waiting while any file is; failed when all failed; else completed")


class AgentFileList(BaseModel):
    id: int
    files: list[FileObject]
    status: FileStatus
    data: list[FileObject] = Field(description="The same files (for clients that read `data`)")


class AgentFileRemoved(BaseModel):
    id: int
    file: FileObject
    removed: Literal[True]


class AgentFilesLink(BaseModel):
    """Files to link to the agent; also spelled ``file_id`` / ``fileId`` (one id)."""

    model_config = ConfigDict(extra="allow")

    file_ids: list[int] | None = None
    file_id: int | str | None = None
    waitExecution: bool | str | None = Field(default=None, description="Wait until the files are processed")
    wait_execution: bool | str | None = None


class SignRequest(BaseModel):
    filename: str
    content_type: str | None = Field(default=None, description="Default application/octet-stream")
    size: int = Field(description="Bytes (at most OPENTESS_MAX_FILE_BYTES)")


class SignedUpload(BaseModel):
    upload_url: str = Field(description="PUT the bytes here, with `required_headers` and no Authorization")
    object_path: str
    required_headers: dict[str, str]
    expires_in: int = Field(description="Seconds the URL stays valid")


class RegisterRequest(BaseModel):
    object_path: str
    filename: str | None = None
    content_type: str | None = None
    process: bool | str | None = None


class KnowledgeFile(BaseModel):
    id: int
    filename: str
    used: Literal["whole", "excerpts"]
    chunks: int


class KnowledgeChunk(BaseModel):
    file_id: int
    chunk_id: int
    location: str


class SkippedFile(BaseModel):
    id: int
    filename: str
    status: str
    reason: str | None


class KnowledgeUsed(BaseModel):
    """What an execution's context took from files."""

    file_ids: list[int] = Field(description="The call's and the conversation's files (carried to later turns)")
    files: list[KnowledgeFile] = Field(description="The files the context used (whole, or excerpts of them)")
    available: int = Field(description="Processed files the call could draw on")
    chunks: list[KnowledgeChunk] = Field(description="The excerpts used, in the order the model saw them")
    skipped: list[SkippedFile] = Field(description="Files left out: failed, or still being processed")
    retrieval: str = Field(
        description="whole (every file fits), full-text or hybrid (with the index used: memory or database), or none"
    )
    tokens: int = Field(description="Estimated tokens of knowledge sent")
    budget: int = Field(description="The knowledge budget of this call, in tokens")
